"""What bench.chaos counts from the audit trail: a killed worker's jobs and their waits, lost, completed twice."""

from __future__ import annotations

from bench.chaos import Kill, Run, Tally, Transition, kill_waits, parse_args, per_job, report, tally

VICTIM = "host:101:aaaaaa"  # the killed worker's lease owner (host:pid:nonce)
SURVIVOR = "host:202:bbbbbb"
NEWCOMER = "host:303:cccccc"  # the worker started after the kill


def claim(job: str, at: float, worker: str, attempt: int = 1) -> Transition:
    return Transition(job, "pending", "processing", attempt, worker, at)


def done(job: str, at: float, worker: str, attempt: int = 1) -> Transition:
    return Transition(job, "processing", "completed", attempt, worker, at)


def reclaimed(job: str, at: float, attempt: int = 1) -> Transition:
    # The sweeper sends an expired lease back to pending; the trigger records the old lease owner.
    return Transition(job, "processing", "pending", attempt, VICTIM, at)


def test_the_jobs_a_killed_worker_held_wait_from_the_kill_to_their_next_claim() -> None:
    kill = Kill(pid=101, at=10.0)
    transitions = [
        # a and b: held by the victim at the kill, reclaimed and claimed again.
        claim("a", 9.0, VICTIM),
        claim("b", 9.5, VICTIM),
        reclaimed("a", 15.5),
        reclaimed("b", 15.5),
        claim("a", 15.7, SURVIVOR, attempt=2),
        claim("b", 16.5, NEWCOMER, attempt=2),
        done("a", 16.0, SURVIVOR, attempt=2),
        done("b", 17.0, NEWCOMER, attempt=2),
        # c: the victim completed it before the kill: not held.
        claim("c", 8.0, VICTIM),
        done("c", 9.9, VICTIM),
        # d: held by the other worker at the kill: not the victim's.
        claim("d", 9.8, SURVIVOR),
        done("d", 10.2, SURVIVOR),
        # e: claimed by the victim exactly at the kill's time (the kill is taken once it was reaped).
        claim("e", 10.0, VICTIM),
        reclaimed("e", 16.0),
        claim("e", 18.0, SURVIVOR, attempt=2),
        done("e", 18.2, SURVIVOR, attempt=2),
    ]
    waits, freed, never = kill_waits(per_job(transitions), [kill])
    assert sorted(round(w, 3) for w in waits) == [5.7, 6.5, 8.0]
    assert sorted(round(w, 3) for w in freed) == [5.5, 5.5, 6.0]
    assert never == 0


def test_a_job_given_up_after_the_kill_is_counted_never_claimed_and_lost() -> None:
    kills = [Kill(pid=101, at=10.0)]
    transitions = [
        claim("a", 9.0, VICTIM),
        Transition("a", "processing", "error", 1, VICTIM, 16.0),  # out of lost leases
        claim("b", 9.0, SURVIVOR),
        done("b", 9.4, SURVIVOR),
    ]
    counted = tally(transitions, {"a": "error", "b": "completed"}, attempts=2, kills=kills)
    assert counted.held == 1 and counted.never == 1 and counted.waits == ()
    assert counted.freed == (6.0,)
    assert counted.lost == 1 and counted.completed == 1 and counted.twice == 0


def test_two_kills_of_the_same_job_count_twice_and_a_second_completion_is_caught() -> None:
    # The job is held by the victim (pid 101) at its kill, then by the newcomer (pid 303) at the next kill.
    kills = [Kill(pid=101, at=10.0), Kill(pid=303, at=20.0)]
    transitions = [
        claim("a", 9.0, VICTIM),
        reclaimed("a", 16.0),
        claim("a", 16.2, NEWCOMER, attempt=2),
        Transition("a", "processing", "pending", 2, NEWCOMER, 26.0),
        claim("a", 26.5, SURVIVOR, attempt=3),
        done("a", 27.0, SURVIVOR, attempt=3),
        # b completed twice (the fencing broken): caught whatever the statuses say.
        claim("b", 1.0, SURVIVOR),
        done("b", 2.0, SURVIVOR),
        Transition("b", "completed", "pending", 1, SURVIVOR, 3.0),
        claim("b", 3.1, SURVIVOR, attempt=2),
        done("b", 4.0, SURVIVOR, attempt=2),
    ]
    counted = tally(transitions, {"a": "completed", "b": "completed"}, attempts=5, kills=kills)
    assert sorted(round(w, 3) for w in counted.waits) == [6.2, 6.5]
    assert counted.held == 2 and counted.never == 0
    assert counted.twice == 1 and counted.lost == 0 and counted.attempts == 5


def test_jobs_of_other_batches_are_left_out_and_a_job_never_final_is_lost() -> None:
    transitions = [claim("other", 9.0, VICTIM), claim("a", 9.0, SURVIVOR)]
    counted = tally(transitions, {"a": "processing"}, attempts=1, kills=[Kill(pid=101, at=10.0)])
    assert counted.held == 0 and counted.jobs == 1
    assert counted.lost == 1 and counted.unfinished == 1


def test_a_kill_of_a_worker_that_had_claimed_nothing_yet_is_idle() -> None:
    # 303 started after the first kill and was killed at 14 s before it claimed anything; 202 had claimed.
    kills = [
        Kill(pid=101, at=10.0, replacement=303),
        Kill(pid=303, at=14.0, replacement=404),
        Kill(pid=202, at=18.0, replacement=505),
    ]
    transitions = [
        claim("a", 9.0, VICTIM),
        reclaimed("a", 16.0),
        claim("a", 16.5, SURVIVOR, attempt=2),
        claim("b", 1.0, SURVIVOR),
        done("b", 2.0, SURVIVOR),
        claim("c", 16.0, "host:404:dddddd"),  # 404, started at 14 s, claims its first job 2 s later
        claim("d", 17.0, "host:404:dddddd"),
    ]
    statuses = {"a": "processing", "b": "completed", "c": "processing", "d": "processing"}
    counted = tally(transitions, statuses, attempts=4, kills=kills)
    assert counted.idle == 1
    assert counted.held == 2  # a at the first kill, a again at 202's kill
    # 303 never claimed (killed first), 505 never did before the end: only 404's start-up is known.
    assert counted.restarts == (2.0,)


def test_the_table_shows_the_share_kept_the_worst_wait_and_a_stall() -> None:
    args = parse_args([])
    base = Tally(1500, 1500, 0, 0, 1500, 0, (), (), 0, 0, (), 0)
    killed = Tally(1500, 1500, 0, 0, 1780, 3, (5.0, 6.0, 7.0), (4.5, 5.5, 5.9), 0, 2, (2.0, 3.0, 9.0), 0)
    # Stalled with 1,100 jobs not final; once its faults stopped 1,000 of them completed, 100 never did.
    stalled = Tally(1500, 1400, 100, 0, 1450, 40, (), (5.5,), 40, 30, (4.0,), 100)
    results = {
        "baseline": [Run("baseline", 25.0, 0, base)],
        "kill": [Run("kill", 35.0, 9, killed), Run("kill", None, 31, stalled, stalled=1100)],
    }
    lines = report(results, args)
    assert lines[2].split()[:6] == ["no", "faults", "1500", "25.0", "60.0", "100.0"]
    # The stalled run counts in every total but not in jobs/s.
    row = "3000 35.0 42.9 71.4 40 32 3.50 43 5.90 7.00 6.00 40 100 0 3230"
    assert lines[3].split()[4:] == row.split()
    assert "throughput kept with a worker SIGKILLed every 4 s: 71.4 % (42.9 vs 60.0 jobs/s" in lines[4]
    assert "after 7.00 s at worst, 6.00 s median (3 jobs, 40 never" in lines[5]
    assert "leases taken back after 5.90 s at worst" in lines[5]
    assert lines[6] == (
        "a worker started in a killed one's place claimed its first job 3.50 s after the kill"
        " (median of 4; 36 of 40 claimed none); 32 kills hit a worker that had claimed nothing yet"
    )
    assert lines[7] == (
        "1 run(s) stalled (no job final for 60 s), left out of jobs/s: SIGKILL every 4 s with 1100 jobs not"
        " final (its faults stopped there; 100 of them never ended)"
    )
    assert lines[8].startswith("lost 100, completed twice 0 of 4500 jobs in 3 run(s)")
