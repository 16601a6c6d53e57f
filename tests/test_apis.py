from infra.apis import REQUIRED_APIS, ProjectApis, ProjectApisArgs


def test_required_apis_are_enabled_and_never_disabled_on_destroy(run_component):
    run = run_component(lambda: ProjectApis("apis", ProjectApisArgs(project="test-project-1")) and None)
    services = run.of_type("gcp:projects/service:Service")
    assert sorted(s.inputs["service"] for s in services) == sorted(REQUIRED_APIS)
    for service in services:
        assert service.inputs["disableOnDestroy"] is False, service.urn
        assert service.inputs["disableDependentServices"] is False, service.urn
