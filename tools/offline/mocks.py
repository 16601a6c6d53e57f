"""Pulumi mocks that stand in for GCP and Kubernetes, and a monitor that records every resource."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import pulumi
from google.protobuf import json_format

from tools.offline.compat import SECRET_SIG, SIG_KEY, MockMonitor

OFFLINE_ENDPOINT = "203.0.113.10"  # TEST-NET-3: never routable
OFFLINE_INTERNAL_ADDRESS = "10.10.0.100"  # an address of the default node subnet (network.subnetCidr)
OFFLINE_PROJECT_NUMBER = "123456789012"
MOCK_ORGANIZATION = "organization"  # Pulumi's own name for the organization of a DIY backend's stacks


def secret(value: Any) -> dict:
    """A property value the SDK deserializes as a secret Output."""
    return {SIG_KEY: SECRET_SIG, "value": value}


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def _fake(name: str, kind: str, length: int = 32) -> str:
    return hashlib.sha256(f"{kind}:{name}".encode()).hexdigest()[:length]


@dataclass
class ResourceRecord:
    """One registered resource as the engine would see it."""

    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict
    parent: str = ""
    provider: str = ""
    dependencies: list[str] = field(default_factory=list)
    state: dict = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    """Pulumi's own wait for the resource (create/update/delete), where the program sets one."""
    protect: bool = False
    """Pulumi refuses to delete or replace it (the `protect` resource option)."""
    aliases: list[dict] = field(default_factory=list)
    """Earlier identities of the resource (the `aliases` option), as the engine receives them."""


class PlatformMocks(pulumi.runtime.Mocks):
    """Echo inputs and add only the computed fields the program reads."""

    def __init__(self, project: str = "offline-project",
                 stack_outputs: Optional[Mapping[str, tuple[dict, set[str]]]] = None):
        self.project = project
        self.stack_outputs = stack_outputs or {}
        """Stack name -> (outputs, names of the secret ones): what a StackReference to it reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict]:
        state = dict(args.inputs)
        name = state.get("name") or args.name
        typ = args.typ
        if typ == "pulumi:pulumi:StackReference":
            outputs, secret_names = self.stack_outputs[name]
            return name, {"name": name, "outputs": outputs, "secretOutputNames": sorted(secret_names)}
        if typ == "gcp:container/cluster:Cluster":
            state.update(name=name, endpoint=OFFLINE_ENDPOINT,
                         masterAuth={"clusterCaCertificate": base64.b64encode(b"offline-ca").decode()})
            if "controlPlaneEndpointsConfig" in state:
                dns = dict(state["controlPlaneEndpointsConfig"].get("dnsEndpointConfig") or {})
                dns["endpoint"] = f"gke-{_fake(name, 'dns', 16)}.{state.get('location')}.gke.goog"
                state["controlPlaneEndpointsConfig"] = {**state["controlPlaneEndpointsConfig"],
                                                        "dnsEndpointConfig": dns}
        elif typ == "gcp:sql/databaseInstance:DatabaseInstance":
            state.update(name=name, connectionName=f"{state.get('project', self.project)}:{state.get('region')}:{name}",
                         privateIpAddress="10.64.0.3")
        elif typ == "gcp:serviceaccount/account:Account":
            email = f"{state['accountId']}@{state.get('project', self.project)}.iam.gserviceaccount.com"
            state.update(email=email, name=f"projects/{state.get('project', self.project)}/serviceAccounts/{email}")
        elif typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            agent = {"sqladmin.googleapis.com": "gcp-sa-cloud-sql",
                     "container.googleapis.com": "container-engine-robot"}[state["service"]]
            state.update(email=f"service-{OFFLINE_PROJECT_NUMBER}@{agent}.iam.gserviceaccount.com")
        elif typ == "gcp:logging/projectSink:ProjectSink":
            # unique_writer_identity: the project's Logging service agent, as the API answers it
            state.update(writerIdentity=f"serviceAccount:service-{OFFLINE_PROJECT_NUMBER}@gcp-sa-logging.iam.gserviceaccount.com")
        elif typ == "gcp:storage/bucket:Bucket":
            state.update(name=name, url=f"gs://{name}")
        elif typ == "gcp:compute/network:Network":
            state.update(name=name, selfLink=f"projects/{self.project}/global/networks/{name}")
        elif typ == "gcp:compute/subnetwork:Subnetwork":
            state.update(name=name, selfLink=f"projects/{self.project}/regions/{state.get('region')}/subnetworks/{name}")
        elif typ == "gcp:compute/globalAddress:GlobalAddress" and state.get("addressType") == "EXTERNAL":
            state.update(name=name, address="198.51.100.7")
        elif typ == "gcp:compute/address:Address" and not state.get("address"):
            # GCP picks a free address of the subnet; offline, one of the default node subnet's.
            state.update(name=name, address=OFFLINE_INTERNAL_ADDRESS)
        elif typ == "gcp:secretmanager/secret:Secret":
            # The provider's id, and what a SecretProviderClass's resourceName is built from.
            secret_name = f"projects/{state.get('project', self.project)}/secrets/{state['secretId']}"
            state.update(name=f"projects/{OFFLINE_PROJECT_NUMBER}/secrets/{state['secretId']}")
            return secret_name, state
        elif typ == "gcp:secretmanager/secretVersion:SecretVersion":
            # id and name alike: the project's number, not its id, as the API answers.
            version_name = f"projects/{OFFLINE_PROJECT_NUMBER}/secrets/{state['secret'].rsplit('/', 1)[-1]}/versions/1"
            state.update(name=version_name, version="1")
            return version_name, state
        elif typ.startswith("gcp:"):
            state.setdefault("name", name)
        elif typ in ("random:index/randomPassword:RandomPassword", "random:index/randomString:RandomString"):
            state["result"] = secret("offline" + _fake(args.name, "password", int(state.get("length", 32)) - 7))
        elif typ == "docker-build:index:Image":
            digest = "sha256:" + hashlib.sha256(args.name.encode()).hexdigest()
            tag = (state.get("tags") or [args.name])[0]
            state.update(digest=digest, ref=f"{tag.rsplit(':', 1)[0]}@{digest}")
        elif typ.startswith("kubernetes:"):
            metadata = dict(state.get("metadata") or {})
            metadata.setdefault("name", args.name)
            state["metadata"] = metadata
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, Optional[list[tuple[str, str]]]]:
        if args.token == "gcp:organizations/getClientConfig:getClientConfig":
            return {"accessToken": "offline-access-token", "project": self.project}, []
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": OFFLINE_PROJECT_NUMBER, "projectId": args.args.get("projectId", self.project)}, []
        if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
            return {"emailAddress": f"service-{OFFLINE_PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"}, []
        if args.token == "gcp:bigquery/getDefaultServiceAccount:getDefaultServiceAccount":
            email = f"bq-{OFFLINE_PROJECT_NUMBER}@bigquery-encryption.iam.gserviceaccount.com"
            return {"email": email, "member": f"serviceAccount:{email}"}, []
        if args.token == "gcp:secretmanager/getSecretVersion:getSecretVersion":
            # the program's own first version, as on a new stack
            return {"version": "1", "secret": args.args.get("secret"), "project": args.args.get("project")}, []
        return {}, []


class RecordingMonitor(MockMonitor):
    """A mock monitor that also keeps what the engine learns: parent, provider, dependencies."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[ResourceRecord] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources[response.urn]
            self.records.append(ResourceRecord(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=bool(request.custom),
                inputs=_inputs_with_secrets(request.object),
                parent=request.parent,
                provider=request.provider.rsplit("::", 1)[0] if request.provider else "",
                dependencies=sorted(set(request.dependencies)),
                state=registration.state,
                ignore_changes=list(request.ignoreChanges),
                custom_timeouts={key: value for key, value in json_format.MessageToDict(request.customTimeouts).items()
                                 if value},
                protect=request.protect,
                aliases=[json_format.MessageToDict(alias) for alias in request.aliases],
            ))
        return response


def _inputs_with_secrets(struct) -> dict:
    """Inputs as plain data, secrets kept as their signature dict so renderers can mask them."""
    return _normalise(json_format.MessageToDict(struct))


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalise(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
