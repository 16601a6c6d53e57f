"""The rehearsals of sign-in through IAP on the local platform of the prod stack (`make local
LOCAL_STACK=prod`): the tracking pod, the migration and access Jobs run the rendered prod containers in
the built images, behind the stand-in for IAP (tools/local/iap.py), which signs assertions with its
own key; the server trusts that key as it trusts Google's in the cloud (MLFLOW_IAP_KEYS_URL).

Two people of different teams each see only what their team may; a forged, an expired and a
wrong-audience assertion are refused with 401, as is a person's password; the admin's password still
works without IAP (break-glass). The rendered teams (Pulumi.prod.yaml): fraud = ada, EDIT on `fraud-`;
risk = everyone of risk.example.com, EDIT on `risk-` and READ on `fraud-`."""

from __future__ import annotations

from typing import Iterator

import pytest
import requests

from tests.iap_tokens import AUDIENCE, PROJECT_NUMBER, SigningKey
from tools.local.iap import ASSERTION_HEADER, USER_COOKIE
from tools.local.localplatform import LocalPlatform
from tools.local.testing import scratch_platform

EXPERIMENTS = ("fraud-detector", "risk-scores", "marketing-uplift")


@pytest.fixture(scope="module")
def platform(request) -> Iterator[LocalPlatform]:
    with scratch_platform(request, "mlflow-iap-", stack="prod", demo_model=False) as local:
        local.start_storage()
        local.run_migrations()
        local.start_tracking()
        for name in EXPERIMENTS:  # made by the admin before the access Job runs, as on a live stack
            assert requests.post(f"{local.tracking_url}/api/2.0/mlflow/experiments/create", json={"name": name},
                                 auth=admin(local), timeout=30).ok
        # bob has signed in once before: the Job finds him among the users of his team's domain
        assert search(signed_in(local, "bob@risk.example.com"), local.people_url).json() == {}
        local.apply_team_access()
        yield local


def admin(platform: LocalPlatform) -> tuple[str, str]:
    return platform.admin_username, platform.admin_password


def signed_in(platform: LocalPlatform, email: str) -> requests.Session:
    """A person's session through the stand-in for IAP, signed in on its page."""
    session = requests.Session()
    answer = session.get(platform.iap.sign_in_url(email), allow_redirects=False, timeout=30)
    assert answer.status_code == 302 and USER_COOKIE in session.cookies
    return session


def search(session: requests.Session, url: str, **kwargs) -> requests.Response:
    return session.post(f"{url}/api/2.0/mlflow/experiments/search", json={"max_results": 100}, timeout=30, **kwargs)


def visible(platform: LocalPlatform, email: str) -> set[str]:
    answer = search(signed_in(platform, email), platform.people_url)
    assert answer.status_code == 200, answer.text
    return {e["name"] for e in answer.json().get("experiments", [])}


def test_people_of_different_teams_each_see_only_what_their_team_may(platform):
    assert visible(platform, "ada@example.com") == {"fraud-detector"}
    assert visible(platform, "bob@risk.example.com") == {"fraud-detector", "risk-scores"}
    assert visible(platform, "eve@example.com") == set()  # signed in, in no team


def test_a_domain_member_signing_in_for_the_first_time_is_in_the_team_at_once(platform):
    assert visible(platform, "carol@risk.example.com") == {"fraud-detector", "risk-scores"}


def test_an_experiment_made_later_is_the_team_s_at_the_next_scheduled_run(platform):
    ada = signed_in(platform, "ada@example.com")
    assert ada.post(f"{platform.people_url}/api/2.0/mlflow/experiments/create", json={"name": "fraud-rules"},
                    timeout=30).ok
    assert "fraud-rules" not in visible(platform, "bob@risk.example.com")  # ada's, not yet risk's
    platform.apply_team_access()  # what the access CronJob runs every 10 minutes
    assert "fraud-rules" in visible(platform, "bob@risk.example.com")


def test_a_team_edits_only_what_it_may_edit(platform):
    ada, bob = signed_in(platform, "ada@example.com"), signed_in(platform, "bob@risk.example.com")
    fraud_id = next(e["experiment_id"] for e in search(ada, platform.people_url).json()["experiments"])
    tag = {"experiment_id": fraud_id, "key": "owner", "value": "fraud"}
    url = f"{platform.people_url}/api/2.0/mlflow/experiments/set-experiment-tag"
    assert bob.post(url, json=tag, timeout=30).status_code == 403  # risk reads fraud's experiments only
    assert ada.post(url, json=tag, timeout=30).status_code == 200


def test_the_stand_in_drops_an_assertion_the_client_sent(platform):
    session = signed_in(platform, "ada@example.com")
    forged = SigningKey.new("stand-in-iap-1").sign("bob@risk.example.com")
    names = {e["name"] for e in search(session, platform.people_url, headers={ASSERTION_HEADER: forged}).json()["experiments"]}
    assert "fraud-detector" in names and "risk-scores" not in names  # still ada: IAP replaces x-goog-* headers


@pytest.mark.parametrize("assertion, reason", [
    pytest.param(lambda key: SigningKey.new(key.kid).sign("ada@example.com"), "Could not verify token signature",
                 id="forged"),
    pytest.param(lambda key: key.sign("ada@example.com", audience=AUDIENCE, issued_ago=900), "expired", id="expired"),
    pytest.param(lambda key: key.sign("ada@example.com", audience=AUDIENCE.replace(PROJECT_NUMBER, "999999999999")),
                 "is not a backend service of project", id="wrong-audience"),
    pytest.param(None, "sign in through Identity-Aware Proxy", id="no-assertion"),
])
def test_a_request_around_iap_without_a_valid_assertion_is_refused_with_401(platform, assertion, reason):
    """Straight to tracking's Service, as a pod of the cluster could: only the signature, issuer, expiry and
    audience tell IAP's assertion from another."""
    headers = {ASSERTION_HEADER: assertion(platform.iap.key)} if assertion else {}
    answer = search(requests.Session(), platform.tracking_url, headers=headers)
    assert answer.status_code == 401 and reason in answer.text, answer.text


def test_a_person_has_no_password_and_the_admin_is_break_glass_without_iap(platform):
    visible(platform, "ada@example.com")  # ada is a user now
    session = requests.Session()
    assert search(session, platform.tracking_url, auth=("ada@example.com", "guess")).status_code == 401
    assert search(session, platform.tracking_url, auth=admin(platform)).status_code == 200


def test_the_ui_works_in_chromium_as_a_named_person(platform):
    """Debian's Chromium (.ci/run) through the stand-in: sign in as ada, see fraud's experiment and not
    risk's, open it."""
    import os
    import re

    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=["--no-sandbox"] if os.geteuid() == 0 else [])
        try:
            page = browser.new_page()
            page.goto(platform.people_url + "/#/experiments")
            page.get_by_label("Google account e-mail").fill("ada@example.com")
            page.get_by_role("button", name="Sign in").click()
            page.goto(platform.people_url + "/#/experiments")
            expect(page.get_by_text("fraud-detector").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("risk-scores")).to_have_count(0)
            page.get_by_text("fraud-detector").first.click()
            expect(page).to_have_url(re.compile(r"/experiments/\d+"), timeout=30_000)
            expect(page.get_by_text("fraud-detector").first).to_be_visible()
        finally:
            browser.close()
