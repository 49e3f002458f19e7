"""Stop-loss: strikes, probation, revert to the last accepted wave, then skip."""

from __future__ import annotations

from bird_bone.heal.stoploss import LoopState, stop_loss_step


def run(perplexities, max_increase=0.03, patience=2, baseline=10.0):
    state = LoopState(0, 0, baseline, baseline)
    states = []
    for wave, ppl in enumerate(perplexities, start=1):
        state = stop_loss_step(state, wave, ppl, max_increase, patience)
        states.append(state)
    return states


def test_small_rises_are_accepted():
    states = run([10.2, 10.4, 10.6])
    assert [s.status for s in states] == ["accepted"] * 3 and states[-1].accepted_wave == 3


def test_two_strikes_in_a_row_revert_to_the_wave_before_them_and_stop():
    states = run([10.2, 11.0, 12.0, 12.1])
    assert [s.status for s in states] == ["accepted", "probation", "reverted", "skipped"]
    assert states[2].accepted_wave == 1 and states[2].accepted_perplexity == 10.2 and states[2].stopped
    assert states[3].accepted_wave == 1


def test_a_good_wave_after_one_strike_accepts_and_resets():
    states = run([11.0, 11.1, 12.0, 12.1])
    assert [s.status for s in states] == ["probation", "accepted", "probation", "accepted"]
    assert states[1].accepted_wave == 2 and states[1].strikes == 0


def test_patience_one_reverts_to_the_baseline_at_once():
    states = run([12.0, 12.0], patience=1)
    assert [s.status for s in states] == ["reverted", "skipped"] and states[0].accepted_wave == 0


def test_state_round_trips_through_json_dicts():
    state = run([10.2, 11.0])[-1]
    assert LoopState.from_dict({**state.to_dict(), "fingerprint": "x"}) == state


def test_a_non_finite_perplexity_reverts_at_once_whatever_the_patience():
    for bad in (float("nan"), float("inf")):
        states = run([10.2, bad, 10.3], patience=5)
        assert [s.status for s in states] == ["accepted", "reverted", "skipped"]
        assert states[1].accepted_wave == 1 and states[1].accepted_perplexity == 10.2 and states[1].stopped


def test_a_non_finite_first_wave_reverts_to_the_baseline():
    states = run([float("nan")], patience=2)
    assert states[0].status == "reverted" and states[0].accepted_wave == 0 and states[0].accepted_perplexity == 10.0
