"""`make local`: the rendered platform (plan/<stack>/k8s/) on this machine. See tools.local.localplatform;
`make images` (tools.local.images) builds the images its pods run."""
