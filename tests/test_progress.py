import io

from blastscope.progress import Progress, progress_bars, run_steps


def counting_stage(n: int, cleaned: list[str]):
    try:
        for i in range(n):
            yield Progress("count", i + 1, n)
        return n * 10
    finally:
        cleaned.append("closed")


def test_run_steps_returns_the_stage_result_and_reports_every_event():
    events = []
    assert run_steps(counting_stage(3, []), events.append) == 30
    assert [event.done for event in events] == [1, 2, 3]


def test_closing_a_stage_after_the_first_event_stops_it_and_cleans_up():
    cleaned: list[str] = []
    stage = counting_stage(100, cleaned)
    first = next(stage)
    stage.close()
    assert first.done == 1
    assert cleaned == ["closed"]


def test_progress_in_a_log_is_a_line_per_tenth_of_each_stage():
    log = io.StringIO()  # not a terminal: no bars redrawn, plain lines
    show = progress_bars(log)
    run_steps(counting_stage(20, []), show)
    show(Progress("segment", 1, 1, "tile 1 of 1"))
    show(Progress("segment", 1, 1, "tile 1 of 1"))  # the same stage again (the next slide)
    lines = log.getvalue().splitlines()
    assert lines[0] == "count: 2/20"
    assert lines[-3:] == ["count: 20/20", *["segment: 1/1 (tile 1 of 1)"] * 2]
    assert len(lines) == 12
