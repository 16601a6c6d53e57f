"""`make local`: the rendered platform (plan/<stack>/k8s/) on this machine. See local.localplatform;
`make images` (local.images) builds the images its pods run."""
