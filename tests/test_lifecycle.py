"""The sans-IO core, driven directly: times in, decisions out."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nacos_token_client.errors import AuthenticationError, ConfigurationError, LoginUnavailableError
from nacos_token_client.lifecycle import Action, RefreshPolicy, RefreshReason, TokenLifecycle, Zone

T0 = 1_000_000.5


def constant(value: float) -> Callable[[], float]:
    return lambda: value


def logged_in(core: TokenLifecycle, value: str = "tok-1", ttl: float = 18000.0, at: float = T0,
              exp: float | None = None) -> None:
    decision = core.decide(at)
    assert decision.action is Action.LOGIN
    core.login_succeeded(value, issued_at=at, token_ttl=ttl, jwt_exp=exp, now=at)


def test_first_request_leads_a_login_and_later_ones_wait() -> None:
    core = TokenLifecycle()
    first = core.decide(T0)
    assert first.action is Action.LOGIN and first.reason is RefreshReason.ABSENT
    second = core.decide(T0)
    assert second.action is Action.WAIT and second.token is None


@pytest.mark.parametrize("ttl", [5.0, 60.0, 18000.0])
def test_zones_scale_with_the_token_life(ttl: float) -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core, ttl=ttl)
    token = core.token
    assert token is not None
    assert token.refresh_at == pytest.approx(T0 + 0.9 * ttl)
    assert token.mandatory_at == pytest.approx(T0 + ttl - min(60.0, 0.05 * ttl))
    assert token.usable_until == pytest.approx(T0 + ttl - min(2.0, 0.02 * ttl))
    assert token.refresh_at < token.mandatory_at < token.usable_until < token.expires_at
    assert core.decide(T0 + 0.5 * ttl).action is Action.USE
    assert core.fast_token(T0 + 0.89 * ttl) is token
    assert core.fast_token(T0 + 0.91 * ttl) is None


def test_advisory_zone_starts_exactly_one_background_refresh() -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core)
    now = T0 + 0.95 * 18000
    first = core.decide(now)
    assert first.action is Action.REFRESH_IN_BACKGROUND and first.token is core.token
    assert first.reason is RefreshReason.ADVISORY
    for _ in range(10):  # everyone else keeps using the valid token, nobody waits
        later = core.decide(now)
        assert later.action is Action.USE and later.token is core.token


def test_jitter_never_refreshes_before_ninety_percent() -> None:
    for r in (0.0, 0.5, 0.999):
        core = TokenLifecycle(rng=constant(r))
        logged_in(core, ttl=1000.0)
        assert core.token is not None
        assert T0 + 900.0 <= core.token.refresh_at <= T0 + 930.0


def test_mandatory_zone_blocks_on_the_in_flight_login() -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core)
    token = core.token
    assert token is not None
    now = token.mandatory_at + 1
    lead = core.decide(now)
    assert lead.action is Action.LOGIN and lead.token is token and lead.reason is RefreshReason.MANDATORY
    assert lead.deadline is not None and lead.deadline <= token.usable_until
    wait = core.decide(now)
    assert wait.action is Action.WAIT and wait.token is token and wait.deadline == token.usable_until


def test_an_expired_token_is_never_used() -> None:
    core = TokenLifecycle()
    logged_in(core, ttl=100.0)
    token = core.token
    assert token is not None
    decision = core.decide(token.usable_until)
    assert decision.action is Action.LOGIN and decision.token is None and decision.reason is RefreshReason.EXPIRED


def test_expiry_is_the_earlier_of_ttl_and_jwt_exp() -> None:
    core = TokenLifecycle()
    logged_in(core, ttl=18000.0, exp=T0 + 17999.5)
    assert core.token is not None and core.token.expires_at == T0 + 17999.5
    core2 = TokenLifecycle()
    logged_in(core2, ttl=100.0, exp=T0 + 500.0)
    assert core2.token is not None and core2.token.expires_at == T0 + 100.0


def test_jwt_exp_far_before_ttl_is_clock_skew_and_ignored() -> None:
    core = TokenLifecycle()
    logged_in(core, ttl=18000.0, exp=T0 - 3600.0)  # our clock runs an hour ahead of the server's
    assert core.token is not None and core.token.expires_at == T0 + 18000.0


def test_same_token_from_the_server_cache_does_not_extend_life_and_backs_off() -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core, value="cached")
    token = core.token
    assert token is not None
    now = token.refresh_at + 1
    assert core.decide(now).action is Action.REFRESH_IN_BACKGROUND
    outcome = core.login_succeeded("cached", issued_at=now, token_ttl=18000 - 0.9 * 18000, jwt_exp=None, now=now)
    assert outcome.same_token and outcome.token is token
    assert core.token is token  # same expiry as before
    assert core.decide(now + 0.01).action is Action.USE  # backed off: no refresh storm
    assert core.decide(now + 600).action is Action.REFRESH_IN_BACKGROUND


def test_failed_advisory_refresh_keeps_serving_and_backs_off() -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core)
    token = core.token
    assert token is not None
    now = token.refresh_at + 1
    assert core.decide(now).action is Action.REFRESH_IN_BACKGROUND
    core.login_failed(LoginUnavailableError("down"), now)
    assert core.decide(now + 0.1) == core.decide(now + 0.1)
    assert core.decide(now + 0.1).action is Action.USE
    assert core.decide(now + 1.1).action is Action.REFRESH_IN_BACKGROUND
    core.login_failed(LoginUnavailableError("down"), now + 1.1)
    assert core.decide(now + 2.0).action is Action.USE  # second back-off is 2 s
    assert core.decide(now + 3.2).action is Action.REFRESH_IN_BACKGROUND


def test_refused_credentials_are_remembered_briefly() -> None:
    core = TokenLifecycle()
    assert core.decide(T0).action is Action.LOGIN
    core.login_failed(AuthenticationError("login refused: user not found!", status_code=403), T0)
    failed = core.decide(T0 + 1)
    assert failed.action is Action.FAIL and isinstance(failed.error, AuthenticationError)
    assert core.decide(T0 + 6).action is Action.LOGIN


def test_compare_and_drop_only_drops_the_rejected_token() -> None:
    core = TokenLifecycle()
    logged_in(core, value="old")
    assert core.rejected("old") is True
    assert core.rejected("old") is False  # ten rejections of one token: one drop
    lead = core.decide(T0 + 1)
    assert lead.action is Action.LOGIN and lead.reason is RefreshReason.REJECTED
    core.login_succeeded("new", issued_at=T0 + 1, token_ttl=18000, jwt_exp=None, now=T0 + 1)
    assert core.rejected("old") is False and core.token is not None and core.token.value == "new"


def test_invalidate_with_and_without_a_token() -> None:
    core = TokenLifecycle()
    logged_in(core, value="a")
    assert core.invalidate("b") is False and core.token is not None
    assert core.invalidate() is True and core.token is None
    assert core.decide(T0).reason is RefreshReason.FORCED


def test_invalidate_clears_the_negative_cache() -> None:
    core = TokenLifecycle()
    core.decide(T0)
    core.login_failed(AuthenticationError("nope"), T0)
    core.invalidate()
    assert core.decide(T0 + 0.1).action is Action.LOGIN


def test_waiter_gets_the_leaders_error_or_its_fallback() -> None:
    core = TokenLifecycle(rng=lambda: 0.0)
    logged_in(core)
    token = core.token
    assert token is not None
    error = LoginUnavailableError("down")
    assert core.after_wait(token.mandatory_at, token, error).action is Action.USE
    assert core.after_wait(token.usable_until, token, error).action is Action.FAIL
    assert core.after_wait(T0, None, error).error is error


def test_abandoned_leader_lets_a_waiter_lead() -> None:
    core = TokenLifecycle()
    core.decide(T0)
    core.login_abandoned()
    decision = core.after_wait(T0, None, None, abandoned=True)
    assert decision.action is Action.LOGIN


def test_adopting_a_stored_token_skips_the_dropped_one() -> None:
    core = TokenLifecycle()
    logged_in(core, value="dead")
    dead = core.token
    assert dead is not None
    core.rejected("dead")
    assert core.adopt(dead, T0 + 1) is False
    fresh = RefreshPolicy().schedule("fresh", issued_at=T0, token_ttl=100, jwt_exp=None)
    assert core.adopt(fresh, T0 + 1) is True
    assert core.token is not None and core.token.value == "fresh" and core.token.source == "store"
    assert core.token.expires_at == fresh.expires_at  # same life, this process's own refresh point
    assert core.adopt(fresh, T0 + 200) is False


def test_a_shared_store_is_looked_at_in_the_background_once_per_interval() -> None:
    core = TokenLifecycle(RefreshPolicy(store_sync_interval=1.0), shared_store=True)
    logged_in(core, value="mine")
    assert core.fast_token(T0 + 0.5) is core.token  # the login just wrote the store: nothing to look at yet
    assert core.fast_token(T0 + 1.0) is None  # a look is due: the request goes through decide()
    first = core.decide(T0 + 1.0)
    assert first.action is Action.SYNC_IN_BACKGROUND and first.token is core.token
    assert core.decide(T0 + 1.1).action is Action.USE  # one look at a time
    newer = RefreshPolicy().schedule("theirs", issued_at=T0 + 0.4, token_ttl=18000, jwt_exp=None)
    assert core.store_synced(newer, T0 + 1.2) is True  # e.g. another process invalidated and logged in
    assert core.token is not None and core.token.value == "theirs"
    assert core.fast_token(T0 + 2.0) is core.token  # and the next look is a second away
    assert core.decide(T0 + 2.3).action is Action.SYNC_IN_BACKGROUND
    older = RefreshPolicy().schedule("old", issued_at=T0, token_ttl=18000, jwt_exp=None)
    assert core.store_synced(older, T0 + 2.4) is False and core.token.value == "theirs"
    assert core.decide(T0 + 3.5).action is Action.SYNC_IN_BACKGROUND
    assert core.store_synced(None, T0 + 3.5) is False and core.token.value == "theirs"  # a gap: keep ours


def test_a_private_store_is_never_looked_at() -> None:
    core = TokenLifecycle()
    logged_in(core)
    assert core.fast_token(T0 + 1000) is core.token
    assert all(core.decide(T0 + t).action is Action.USE for t in (1, 10, 1000))


def test_adopted_tokens_get_their_own_jittered_refresh_point() -> None:
    shared = RefreshPolicy().schedule("t", issued_at=T0, token_ttl=1000, jwt_exp=None, rng=constant(0.0))
    points = set()
    for r in (0.0, 0.5, 1.0):
        core = TokenLifecycle(rng=constant(r))
        core.adopt(shared, T0 + 1)
        assert core.token is not None
        points.add(core.token.refresh_at)
    assert sorted(points) == [T0 + 900.0, T0 + 915.0, T0 + 930.0]


def test_token_repr_never_shows_the_token() -> None:
    token = RefreshPolicy().schedule("s3cr3t-token-value", issued_at=T0, token_ttl=100, jwt_exp=None)
    for text in (repr(token), str(token), repr(token.info())):
        assert "s3cr3t" not in text
    assert token.fingerprint in repr(token.info())


@pytest.mark.parametrize("options", [{"refresh_ratio": 0.0}, {"refresh_ratio": 1.0}, {"jitter": 0.2},
                                     {"login_timeout": -1.0}, {"mandatory_fraction": 0.7}])
def test_bad_policies_are_configuration_errors(options: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RefreshPolicy(**options)


@given(ttl=st.floats(min_value=0.001, max_value=10 * 365 * 86400), r=st.floats(min_value=0, max_value=1),
       exp_offset=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)))
def test_zone_boundaries_are_always_ordered(ttl: float, r: float, exp_offset: float | None) -> None:
    exp = None if exp_offset is None else T0 + ttl + exp_offset
    token = RefreshPolicy().schedule("t", issued_at=T0, token_ttl=ttl, jwt_exp=exp, rng=lambda: r)
    assert token.issued_at <= token.refresh_at <= token.mandatory_at <= token.usable_until <= token.expires_at
    assert token.expires_at <= T0 + ttl
    assert token.zone(token.usable_until) is Zone.EXPIRED


def test_the_same_token_after_our_expiry_is_rescheduled_not_a_login_loop() -> None:
    core = TokenLifecycle(rng=constant(0.0))
    logged_in(core, value="cached", ttl=100.0)
    token = core.token
    assert token is not None
    late = token.usable_until + 1  # our clock says it is dead; the server (skewed) still hands it back
    assert core.decide(late).action is Action.LOGIN
    core.login_succeeded("cached", issued_at=late, token_ttl=60.0, jwt_exp=None, now=late)
    assert core.token is not None and core.token.expires_at == late + 60.0
    assert core.decide(late + 1).action is Action.USE
