"""The sans-IO core, driven directly: times in, decisions out (no I/O, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nacos_token_client.errors import (
    AuthenticationError,
    ConfigurationError,
    LoginResponseError,
    LoginUnavailableError,
    NacosTokenError,
)
from nacos_token_client.lifecycle import (
    Action,
    Decision,
    Lease,
    LoginOutcome,
    Owner,
    RefreshPolicy,
    RefreshReason,
    RejectionVerdict,
    Ticket,
    Token,
    TokenLifecycle,
    Zone,
)

T0 = 1_000_000.5  # the wall clock when a scenario starts
M0 = 500.0  # the monotonic clock at the same moment; ``t`` below advances both together
LIFE = 18000.0  # Nacos's default tokenTtl


def constant(value: float) -> Callable[[], float]:
    return lambda: value


class Mortal(Owner):
    """A lease owner whose death the test decides (a leader thread that died, a closed event loop)."""

    def __init__(self) -> None:
        self.living = True

    def alive(self) -> bool:
        return self.living


def make(*, shared_store: bool = False, **options: Any) -> TokenLifecycle:
    return TokenLifecycle(RefreshPolicy(**options), rng=constant(0.0), shared_store=shared_store)


def decide(core: TokenLifecycle, t: float, ticket: Ticket | None = None, owner: Owner | None = None) -> Decision:
    return core.decide(T0 + t, M0 + t, ticket if ticket is not None else Ticket(), owner or Owner())


def lead(core: TokenLifecycle, t: float, ticket: Ticket | None = None, owner: Owner | None = None) -> Lease:
    decision = decide(core, t, ticket, owner)
    assert decision.action in (Action.LOGIN, Action.REFRESH_IN_BACKGROUND) and decision.lease is not None, decision
    return decision.lease


def finish(core: TokenLifecycle, lease: Lease, value: str, t: float, *, ttl: float = LIFE,
           exp: float | None = None) -> LoginOutcome:
    return core.login_succeeded(lease, value, issued_at=T0 + t, token_ttl=ttl, jwt_exp=exp, now=T0 + t)


def logged_in(core: TokenLifecycle, value: str = "tok-1", t: float = 0.0, ticket: Ticket | None = None, *,
              ttl: float = LIFE, exp: float | None = None) -> Token:
    outcome = finish(core, lead(core, t, ticket), value, t, ttl=ttl, exp=exp)
    assert outcome.installed
    return outcome.token


def fail(core: TokenLifecycle, lease: Lease, error: NacosTokenError, t: float) -> None:
    core.login_failed(lease, error, T0 + t, M0 + t)


def reject(core: TokenLifecycle, token: Token, t: float) -> RejectionVerdict:
    return core.rejected(token, T0 + t, M0 + t)


def stored(value: str, t: float, ttl: float = LIFE) -> Token:
    """A token another process logged in for ``t`` seconds into the scenario and put in the shared store."""
    return RefreshPolicy().schedule(value, issued_at=T0 + t, token_ttl=ttl, jwt_exp=None, rng=constant(0.0))


def strike_twice(core: TokenLifecycle) -> tuple[Token, RejectionVerdict]:
    """Two tokens in a row rejected right after their logins (at t=0.1 and t=0.2); returns the second one."""
    first = reject(core, logged_in(core, "a"), 0.1)
    assert first.relogin and first.dropped  # one strike is forgiven
    second = logged_in(core, "b", 0.1, Ticket(min_generation=first.min_generation))
    return second, reject(core, second, 0.2)


# -- zones -------------------------------------------------------------------------------------------------------

def test_first_request_leads_a_login_and_the_others_wait_in_slices() -> None:
    core = make()
    first = decide(core, 0)
    assert first.action is Action.LOGIN and first.reason is RefreshReason.ABSENT and first.token is None
    assert first.lease is core.flight and first.lease is not None and first.lease.deadline == M0 + 30.0
    second = decide(core, 0.1)
    assert second.action is Action.WAIT and second.token is None and second.wait == 0.5


@pytest.mark.parametrize("ttl", [5.0, 60.0, 18000.0])
def test_zones_scale_with_the_token_life(ttl: float) -> None:
    core = make()
    token = logged_in(core, ttl=ttl)
    assert token.refresh_at == pytest.approx(T0 + 0.9 * ttl)
    assert token.mandatory_at == pytest.approx(T0 + ttl - min(60.0, 0.05 * ttl))
    assert token.usable_until == pytest.approx(T0 + ttl - min(2.0, 0.02 * ttl))
    assert token.refresh_at < token.mandatory_at < token.usable_until < token.expires_at
    assert decide(core, 0.5 * ttl).action is Action.USE
    assert core.fast_token(T0 + 0.89 * ttl) is token and core.fast_token(T0 + 0.91 * ttl) is None
    expired = decide(core, token.usable_until - T0)  # an expired token is never sent
    assert expired.action is Action.LOGIN and expired.token is None and expired.reason is RefreshReason.EXPIRED


def test_advisory_zone_starts_exactly_one_background_refresh() -> None:
    core = make()
    token = logged_in(core)
    first = decide(core, 0.95 * LIFE)
    assert first.action is Action.REFRESH_IN_BACKGROUND and first.token is token
    assert first.reason is RefreshReason.ADVISORY and first.lease is core.flight
    for i in range(10):  # everyone else keeps using the valid token, nobody waits
        later = decide(core, 0.95 * LIFE + i)
        assert later.action is Action.USE and later.token is token


def test_mandatory_zone_waits_for_the_login_in_flight() -> None:
    core = make()
    token = logged_in(core)
    t = token.mandatory_at - T0 + 1
    leader = decide(core, t)
    assert leader.action is Action.LOGIN and leader.token is token and leader.reason is RefreshReason.MANDATORY
    waiting = decide(core, t)
    assert waiting.action is Action.WAIT and waiting.token is token and waiting.wait == 0.5
    ticket = Ticket()  # once the token is unusable, the request has its own budget instead
    late = core.decide(token.usable_until, M0 + t + 2, ticket, Owner())
    assert late.action is Action.WAIT and late.token is None and ticket.deadline == M0 + t + 2 + 30.0


@pytest.mark.parametrize(("ttl", "exp", "life"), [
    (18000.0, 17999.5, 17999.5),  # exp is whole server seconds: the earlier one wins
    (100.0, 500.0, 100.0),
    (18000.0, 8999.0, 8999.0),  # just within the skew guard: still trusted
    (18000.0, 8998.9, 18000.0),  # far earlier than tokenTtl says: clock skew, not a shorter life
    (18000.0, -3600.0, 18000.0),  # our clock runs an hour ahead of the server's
])
def test_expiry_is_the_earlier_of_ttl_and_jwt_exp_unless_clocks_are_skewed(ttl: float, exp: float,
                                                                            life: float) -> None:
    token = logged_in(make(), ttl=ttl, exp=T0 + exp)
    assert token.expires_at == pytest.approx(T0 + life)


@pytest.mark.parametrize("outcome", ["same token", "failure"])
def test_a_background_refresh_that_gains_nothing_keeps_serving_and_backs_off(outcome: str) -> None:
    core = make()
    token = logged_in(core, "cached")
    t = token.refresh_at - T0 + 1
    for start, pause in ((t, 1.0), (t + 1.01, 2.0)):  # the back-off doubles: no refresh storm
        lease = lead(core, start)
        if outcome == "failure":
            fail(core, lease, LoginUnavailableError("down"), start)
        else:  # the server's token cache handed back what we hold: its life did not grow
            same = finish(core, lease, "cached", start, ttl=LIFE - start)
            assert same.same_token and same.installed and same.token.generation == lease.generation
            assert same.token.expires_at == token.expires_at
        assert decide(core, start + pause - 0.05).action is Action.USE
    assert decide(core, t + 3.02).action is Action.REFRESH_IN_BACKGROUND


def test_the_same_token_after_our_expiry_is_rescheduled_not_a_login_loop() -> None:
    core = make()
    token = logged_in(core, "cached", ttl=100.0)
    late = token.usable_until - T0 + 1  # our clock says it is dead; the (skewed) server still hands it back
    renewed = finish(core, lead(core, late), "cached", late, ttl=60.0)
    assert renewed.installed and renewed.token.expires_at == pytest.approx(T0 + late + 60.0)
    assert decide(core, late + 1).action is Action.USE


# -- a request's own budget, failures, leases --------------------------------------------------------------------

def test_a_failed_transient_login_makes_waiters_back_off_then_lead() -> None:
    core = make()
    leader, waiter = Ticket(), Ticket()
    lease = lead(core, 0, leader)
    assert decide(core, 0.1, waiter).action is Action.WAIT
    fail(core, lease, LoginUnavailableError("connection refused", attempts=3), 1.0)
    pause = decide(core, 1.0, waiter)
    assert pause.action is Action.WAIT and pause.wait == pytest.approx(0.05)
    again = decide(core, 1.06, waiter)
    assert again.action is Action.LOGIN and again.reason is RefreshReason.ABSENT and again.lease is not None
    fail(core, again.lease, LoginUnavailableError("connection refused"), 2.0)
    assert decide(core, 2.0, leader).wait == pytest.approx(0.1)  # the pause doubles


def test_a_request_fails_once_its_own_budget_is_spent() -> None:
    core = make(login_timeout=5.0)
    early = Ticket()
    fail(core, lead(core, 0, early), LoginUnavailableError("connection refused", attempts=3), 1.0)
    assert early.deadline == M0 + 5.0
    lead(core, 1.1)  # another request leads the next attempt
    assert decide(core, 4.9, early).wait == pytest.approx(0.1)  # a slice never outlasts the budget
    failed = decide(core, 5.0, early)
    assert failed.action is Action.FAIL and isinstance(failed.error, LoginUnavailableError)
    assert "login_timeout (5 s)" in str(failed.error) and "connection refused" in str(failed.error)
    assert failed.error.attempts == 3
    assert decide(core, 5.0).action is Action.WAIT  # a newer request still has its budget


@pytest.mark.parametrize("error", [AuthenticationError("user not found!", status_code=403),
                                   LoginResponseError("no accessToken in the answer"),
                                   ConfigurationError("tokenTtl is not a number")])
def test_hard_errors_fail_waiters_at_once_and_are_negative_cached(error: NacosTokenError) -> None:
    core = make()
    waiter = Ticket()
    lease = lead(core, 0)
    decide(core, 0.1, waiter)
    fail(core, lease, error, 1.0)
    first, second = decide(core, 1.0, waiter), decide(core, 5.9)
    for decision in (first, second):
        assert decision.action is Action.FAIL and type(decision.error) is type(error)
        assert str(decision.error) == str(error)
    assert first.error is not error and first.error is not second.error  # a fresh exception per raise
    fail(core, lead(core, 6.01), error, 6.5)  # remembered for 5 s; once more, then the user's word ends it
    assert decide(core, 6.5).action is Action.FAIL
    core.invalidate()
    assert decide(core, 6.5).action is Action.LOGIN


@pytest.mark.parametrize("end", ["owner died", "overran", "abandoned"])
def test_a_void_login_lets_the_next_request_lead(end: str) -> None:
    core = make(login_timeout=5.0)
    owner = Mortal()
    first = lead(core, 0, owner=owner)
    assert decide(core, 4.8).wait == pytest.approx(0.2)  # a slice never outlasts the lease
    owner.living = end != "owner died"
    if end == "abandoned":
        core.login_abandoned(first)
    second = decide(core, 5.0 if end == "overran" else 4.8)
    assert second.action is Action.LOGIN and second.lease is not None and second.lease is not first
    assert second.lease.generation == first.generation + 1


@pytest.mark.parametrize("new_first", [True, False])
def test_a_voided_leader_contributes_its_token_unless_a_later_login_finished(new_first: bool) -> None:
    core = make()
    owner = Mortal()
    old = lead(core, 0, owner=owner)
    owner.living = False
    new = lead(core, 0.1)
    if new_first:
        assert finish(core, new, "new", 0.1).installed
        assert not finish(core, old, "old", 0.2).installed
        assert core.token is not None and core.token.value == "new"
    else:
        assert finish(core, old, "old", 0.2).installed
        assert decide(core, 0.3).action is Action.USE  # nobody waits for the second login any more
        assert finish(core, new, "new", 0.4).installed and core.token is not None and core.token.value == "new"


# -- shared stores ---------------------------------------------------------------------------------------------

def test_a_shared_store_is_looked_at_in_the_background_once_per_interval() -> None:
    core = make(shared_store=True)
    mine = logged_in(core, "mine")
    assert core.fast_token(T0 + 0.5) is mine  # the login just wrote the store: nothing to look at yet
    assert core.fast_token(T0 + 1.0) is None  # a look is due: the request goes through decide()
    look = decide(core, 1.0)
    assert look.action is Action.SYNC_IN_BACKGROUND and look.token is mine and look.lease is not None
    assert decide(core, 1.1).action is Action.USE
    adopted = core.sync_finished(look.lease, stored("theirs", 0.4), T0 + 1.2)  # e.g. an invalidate() elsewhere
    assert adopted is not None and core.token is adopted and adopted.value == "theirs"
    assert adopted.source == "store" and adopted.generation == mine.generation + 1
    assert core.fast_token(T0 + 2.1) is adopted  # and the next look is a second away
    look = decide(core, 2.3)
    assert look.action is Action.SYNC_IN_BACKGROUND and look.lease is not None
    assert core.sync_finished(look.lease, stored("old", 0), T0 + 2.4) is None and core.token is adopted
    look = decide(core, 3.5)
    assert look.lease is not None and core.sync_finished(look.lease, None, T0 + 3.5) is None
    assert core.token is adopted  # a gap in the store: keep ours


@pytest.mark.parametrize("void", ["owner", "deadline"])
def test_one_store_look_at_a_time_and_a_void_one_does_not_block_later_looks(void: str) -> None:
    core = make(shared_store=True, store_sync_timeout=5.0)
    logged_in(core)
    owner = Mortal()
    assert decide(core, 1.0, owner=owner).action is Action.SYNC_IN_BACKGROUND
    assert decide(core, 2.5).action is Action.USE  # due again, but the first look still holds its lease
    if void == "owner":
        owner.living = False
        assert decide(core, 2.6).action is Action.SYNC_IN_BACKGROUND
    else:
        assert decide(core, 5.9).action is Action.USE
        assert decide(core, 6.0).action is Action.SYNC_IN_BACKGROUND


def test_adopt_takes_a_stored_token_but_never_the_dropped_one() -> None:
    core = make()
    dead = logged_in(core, "dead")
    verdict = reject(core, dead, 100)
    replay = Ticket(min_generation=verdict.min_generation)
    lease = lead(core, 100, replay)
    assert core.adopt(lease, dead, T0 + 100) is None and core.flight is lease
    fresh = stored("fresh", 99, ttl=100)
    adopted = core.adopt(lease, fresh, T0 + 100)
    assert adopted is not None and core.token is adopted and adopted.source == "store"
    assert adopted.expires_at == fresh.expires_at and adopted.generation == lease.generation
    assert core.flight is None and decide(core, 100, replay).token is adopted
    assert core.adopt(lead(core, 200), fresh, T0 + 200) is None  # expired by then


def test_adopted_tokens_get_their_own_jittered_refresh_point() -> None:
    shared = stored("t", 0, ttl=1000)
    points = set()
    for r in (0.0, 0.5, 1.0):
        core = TokenLifecycle(rng=constant(r))
        adopted = core.adopt(lead(core, 1), shared, T0 + 1)
        assert adopted is not None and adopted.expires_at == shared.expires_at
        points.add(adopted.refresh_at)
    assert sorted(points) == [T0 + 900.0, T0 + 915.0, T0 + 930.0]


# -- rejections, generations and the floor -------------------------------------------------------------------------

def test_a_rejection_raises_the_floor_so_a_login_already_in_flight_is_not_used() -> None:
    core = make()
    token = logged_in(core, "a")
    t = token.refresh_at - T0 + 1
    refresh = lead(core, t)  # a background refresh is in flight when the key rotates
    verdict = reject(core, token, t + 0.1)
    assert verdict.relogin and verdict.dropped and verdict.min_generation == refresh.generation + 1 == core.floor
    assert core.adopt(refresh, stored("b", t), T0 + t + 0.1) is None
    replay = Ticket(min_generation=verdict.min_generation)
    assert decide(core, t + 0.1, replay).action is Action.WAIT
    stale = finish(core, refresh, "b-old-key", t + 0.2)
    assert not stale.installed and core.token is None
    relogin = decide(core, t + 0.2, replay)
    assert relogin.action is Action.LOGIN and relogin.reason is RefreshReason.REJECTED and relogin.lease is not None
    fresh = finish(core, relogin.lease, "c", t + 0.3)
    assert fresh.installed and fresh.token.generation == verdict.min_generation
    assert decide(core, t + 0.3, replay).token is fresh.token


def test_many_rejections_of_one_token_drop_it_once_and_share_one_login() -> None:
    core = make()
    token = logged_in(core, "a")
    verdicts = [reject(core, token, 100 + i * 0.01) for i in range(5)]
    assert [v.dropped for v in verdicts] == [True, False, False, False, False] and all(v.relogin for v in verdicts)
    assert {v.min_generation for v in verdicts} == {core.floor}
    actions = [decide(core, 100.1, Ticket(min_generation=v.min_generation)).action for v in verdicts]
    assert actions == [Action.LOGIN] + [Action.WAIT] * 4


def test_the_rejection_of_an_older_token_asks_for_the_next_generation() -> None:
    core = make()
    old = logged_in(core, "a")
    t = old.refresh_at - T0 + 1
    current = finish(core, lead(core, t), "b", t).token
    verdict = reject(core, old, t + 1)  # a request sent with the old token before the refresh finished
    assert verdict == RejectionVerdict(True, old.generation + 1) and core.token is current
    assert decide(core, t + 1, Ticket(min_generation=verdict.min_generation)).token is current


def test_invalidate_drops_the_token_and_a_login_already_in_flight() -> None:
    core = make()
    token = logged_in(core, "a")
    assert core.invalidate("other") is False and core.token is token  # compare-and-drop
    t = token.refresh_at - T0 + 1
    refresh = lead(core, t)
    assert core.invalidate() is True and core.token is None
    assert not finish(core, refresh, "b", t + 0.1).installed
    assert decide(core, t + 0.1).reason is RefreshReason.FORCED
    assert core.invalidate() is False


# -- strikes and storms --------------------------------------------------------------------------------------------

def test_a_second_quick_rejection_in_a_row_backs_off_rejection_driven_logins() -> None:
    core = make()
    token, verdict = strike_twice(core)
    assert verdict == RejectionVerdict(False, storm_seconds=1.0) and core.token is token
    assert decide(core, 0.3).token is token  # other requests keep using it
    during = reject(core, token, 0.7)
    assert not during.relogin and during.storm_seconds == pytest.approx(0.5)
    assert decide(core, 0.7, Ticket(min_generation=token.generation + 1)).action is Action.BACK_OFF
    after = reject(core, token, 1.25)
    assert after.relogin and after.dropped
    relogin = decide(core, 1.25, Ticket(min_generation=after.min_generation))
    assert relogin.action is Action.LOGIN and relogin.reason is RefreshReason.REJECTED


def test_storm_back_off_doubles_up_to_its_maximum() -> None:
    policy = RefreshPolicy(storm_backoff_initial=0.5, storm_backoff_max=3.0)
    assert [policy.storm_delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    core = TokenLifecycle(policy, rng=constant(0.0))
    token, verdict = strike_twice(core)
    delays, t = [verdict.storm_seconds], 0.2
    for i in range(4):  # after each back-off the token is dropped; its successor is rejected at once again
        t += delays[-1] + 0.01
        drop = reject(core, token, t)
        assert drop.relogin and drop.dropped
        token = logged_in(core, f"c{i}", t, Ticket(min_generation=drop.min_generation))
        again = reject(core, token, t + 0.01)
        assert not again.relogin
        delays.append(again.storm_seconds)
    assert delays[0] == 0.5 < delays[1] and delays == sorted(delays) and delays[-1] == 3.0
    assert delays[:3] == [0.5, 1.0, 2.0]  # doubling with each back-off in a row


def test_the_next_storm_back_off_does_not_depend_on_how_many_requests_were_rejected_meanwhile() -> None:
    def next_back_off(rejected_meanwhile: int) -> float:
        core = make()
        token, _ = strike_twice(core)
        assert not any(reject(core, token, 0.3 + 0.1 * i).relogin for i in range(rejected_meanwhile))
        drop = reject(core, token, 1.3)
        assert drop.dropped
        successor = logged_in(core, "c", 1.3, Ticket(min_generation=drop.min_generation))
        return reject(core, successor, 1.31).storm_seconds

    assert next_back_off(3) == next_back_off(0)


@pytest.mark.parametrize(("worked_at", "forgiven"), [(None, False), (0.1, False), (1.0, True)])
def test_a_token_that_worked_past_its_strike_window_resets_the_strikes(worked_at: float | None,
                                                                         forgiven: bool) -> None:
    core = make()
    first = reject(core, logged_in(core, "a", ttl=10.0), 0.05)  # strike one (the window: 1 % of 10 s)
    token = logged_in(core, "b", 0.05, Ticket(min_generation=first.min_generation), ttl=10.0)
    if worked_at is not None:
        core.token_worked(token, T0 + worked_at)
    t = token.refresh_at - T0 + 0.01
    successor = finish(core, lead(core, t), "c", t, ttl=10.0).token  # a routine background refresh
    assert reject(core, successor, t + 0.05).relogin is forgiven


def test_a_token_rejected_after_its_strike_window_resets_the_strikes() -> None:
    core = make()
    first = reject(core, logged_in(core, "a"), 0.1)
    token = logged_in(core, "b", 0.1, Ticket(min_generation=first.min_generation))
    rotation = reject(core, token, 5.0)  # it lived past its window: a key rotation, not a storm
    assert rotation.relogin and rotation.dropped
    successor = logged_in(core, "c", 5.0, Ticket(min_generation=rotation.min_generation))
    assert reject(core, successor, 5.1).relogin  # a first strike again: forgiven


def test_invalidate_ends_a_storm_back_off() -> None:
    core = make()
    token, _ = strike_twice(core)
    replay = Ticket(min_generation=token.generation + 1)
    assert decide(core, 0.3, replay).action is Action.BACK_OFF
    assert core.invalidate() is True
    forced = decide(core, 0.3, replay)
    assert forced.action is Action.LOGIN and forced.reason is RefreshReason.FORCED and forced.lease is not None
    successor = finish(core, forced.lease, "c", 0.3).token
    assert reject(core, successor, 0.35).relogin  # the strikes were cleared: this one is forgiven


def test_a_store_look_begun_before_a_rejection_does_not_install_its_token() -> None:
    core = make(shared_store=True)
    token = logged_in(core, "a")
    look = decide(core, 1.0)
    assert look.action is Action.SYNC_IN_BACKGROUND and look.lease is not None
    verdict = reject(core, token, 1.1)  # past its strike window: a key rotation
    assert verdict.dropped
    before_rotation = stored("theirs", 0.5)  # another process's login, begun before the floor was raised
    assert core.sync_finished(look.lease, before_rotation, T0 + 1.2) is None
    assert decide(core, 1.2, Ticket(min_generation=verdict.min_generation)).action is Action.LOGIN


# -- values, policy, properties -------------------------------------------------------------------------------------

def test_token_repr_never_shows_the_token() -> None:
    token = stored("s3cr3t-token-value", 0, ttl=100)
    for text in (repr(token), str(token), repr(token.info())):
        assert "s3cr3t" not in text
    assert token.fingerprint in repr(token.info())


@pytest.mark.parametrize(("options", "message"), [
    ({"refresh_ratio": 0.0}, "refresh_ratio must be between 0 and 1"),
    ({"jitter": 0.2}, "jitter must be in"),
    ({"mandatory_fraction": 0.7}, "mandatory_fraction must be in"),
    ({"login_timeout": -1.0}, "login_timeout must not be negative"),
    ({"login_timeout": 0.0}, "must be positive"),
    ({"login_timeout": 7200.0}, "at most 3600"),
    ({"storm_backoff_max": float("nan")}, "storm_backoff_max must be a finite number"),
    ({"retry_backoff_initial": True}, "retry_backoff_initial must be a finite number"),
    ({"store_sync_interval": "1"}, "store_sync_interval must be a finite number"),
])
def test_bad_policies_are_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        RefreshPolicy(**options)


@given(ttl=st.floats(min_value=0.001, max_value=10 * 365 * 86400), r=st.floats(min_value=0, max_value=1),
       exp_offset=st.one_of(st.none(), st.floats(min_value=-1e6, max_value=1e6)))
def test_zone_boundaries_are_always_ordered(ttl: float, r: float, exp_offset: float | None) -> None:
    exp = None if exp_offset is None else T0 + ttl + exp_offset
    token = RefreshPolicy().schedule("t", issued_at=T0, token_ttl=ttl, jwt_exp=exp, rng=constant(r))
    assert token.issued_at <= token.refresh_at <= token.mandatory_at <= token.usable_until <= token.expires_at
    assert token.expires_at in (T0 + ttl, exp) and token.expires_at <= T0 + ttl
    assert 0.9 * token.lifetime - 1e-6 <= token.refresh_at - token.issued_at <= 0.93 * token.lifetime + 1e-6
    assert token.zone(token.usable_until) is Zone.EXPIRED


@given(ttl=st.floats(min_value=5, max_value=1e6), at=st.floats(min_value=0, max_value=0.99),
       flight_age=st.floats(min_value=0, max_value=29.99))
def test_a_waiter_holding_a_usable_token_never_waits_past_it_or_the_lease(ttl: float, at: float,
                                                                          flight_age: float) -> None:
    core = make()
    token = logged_in(core, ttl=ttl)
    core.decide(token.mandatory_at, M0, Ticket(), Owner())  # leads the mandatory login
    now = token.mandatory_at + at * (token.usable_until - token.mandatory_at)
    waiting = core.decide(now, M0 + flight_age, Ticket(), Owner())
    assert waiting.action is Action.WAIT and waiting.token is token
    assert 0 < waiting.wait <= min(0.5, token.usable_until - now, 30.0 - flight_age) + 1e-9
