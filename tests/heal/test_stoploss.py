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


def run_budget(perplexities, patience=2, seed=10.0, budget=0.015):
    state, states = LoopState(0, 0, seed, seed), []
    for wave, ppl in enumerate(perplexities, start=1):
        state = stop_loss_step(state, wave, ppl, 0.03, patience, seed_perplexity=seed, budget_increase=budget)
        states.append(state)
    return states


def test_a_wave_over_the_budget_reverts_at_once_to_the_wave_before_it_whatever_the_patience():
    # wave 2 rises 0.5 % over wave 1 (no strike) but is 2 % over the seed: out of a 1.5 % budget
    states = run_budget([10.1, 10.2, 10.0], patience=2)
    assert [s.status for s in states] == ["accepted", "reverted", "skipped"]
    assert states[1].stopped and states[1].accepted_wave == 1 and states[1].accepted_perplexity == 10.1


def test_the_budget_keeps_a_wave_on_probation_that_is_within_it():
    # wave 2 rises 4 % over wave 1 (a strike) yet stays within budget; wave 3 breaks it: wave 2 is kept
    states = run_budget([9.7, 10.1, 10.2], patience=3)
    assert [s.status for s in states] == ["accepted", "probation", "reverted"]
    assert states[2].accepted_wave == 2 and states[2].accepted_perplexity == 10.1


def test_a_first_wave_over_the_budget_reverts_to_the_seed_and_within_it_is_kept():
    assert [(s.status, s.accepted_wave) for s in run_budget([10.2])] == [("reverted", 0)]
    assert [(s.status, s.accepted_wave) for s in run_budget([10.14])] == [("accepted", 1)]
    assert run_budget([float("nan")])[0].status == "reverted"
