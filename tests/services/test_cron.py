"""Cron parsing and due times with a controlled clock: zones, DST changes, macros, refusals."""

import datetime as dt

import pytest

from functions import cron

UTC = dt.UTC


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros_expand_to_five_fields(macro, expanded):
    assert cron.normalize_cron(macro) == expanded


def test_names_steps_ranges_and_lists_are_accepted():
    assert cron.normalize_cron("  */15  9-17 * jan-mar,dec mon-fri ") == "*/15 9-17 * JAN-MAR,DEC MON-FRI"


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "empty"),
        ("* * * *", "has 4"),
        ("0 * * * * *", "has 6"),  # seconds field: not in the CronJob dialect
        ("61 * * * *", "bad minute"),
        ("0 25 * * *", "bad hour"),
        ("0 0 L * *", "day of month"),
        ("0 0 * * MON#1", "day of week"),
        ("0 0 ? * *", "day of month"),
        ("0 0 * * 5L", "day of week"),
        ("@reboot", "unknown macro"),
        ("@every 5m", "unknown macro"),
        ("0 0 31 2 *", "bad day"),
        ("*/0 * * * *", "bad minute"),
    ],
)
def test_refused_expressions_say_why(expression, reason):
    with pytest.raises(cron.CronError) as err:
        cron.normalize_cron(expression)
    assert reason in str(err.value).lower()


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "../../etc/passwd", "", "+02:00", "/usr/share/zoneinfo/UTC"]
)
def test_unknown_zones_are_refused(zone):
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.get_zone(zone)


def test_sunday_is_zero_or_seven():
    a = cron.next_runs("0 12 * * 0", "UTC", after=utc(2026, 11, 25))
    b = cron.next_runs("0 12 * * 7", "UTC", after=utc(2026, 11, 25))
    assert a == b and a[0] == utc(2026, 11, 29, 12)


def test_next_runs_are_computed_in_the_schedules_zone():
    # 09:00 in Tokyo is 00:00 UTC; in New York (EST in November) it is 14:00 UTC.
    after = utc(2026, 11, 25, 12)
    assert cron.next_runs("0 9 * * *", "Asia/Tokyo", after=after, count=2) == [
        utc(2026, 11, 26, 0),
        utc(2026, 11, 27, 0),
    ]
    assert cron.next_run("0 9 * * *", "America/New_York", after=after) == utc(2026, 11, 25, 14)


def test_next_run_is_strictly_after_the_given_instant():
    assert cron.next_run("30 2 * * *", "UTC", after=utc(2026, 1, 1, 2, 30)) == utc(2026, 1, 2, 2, 30)
    assert cron.next_run("30 2 * * *", "UTC", after=utc(2026, 1, 1, 2, 29, 59, 500)) == utc(2026, 1, 1, 2, 30)


def test_daily_0230_berlin_on_spring_forward_day_runs_when_the_clock_jumps():
    # 2026-03-29: 02:00 CET becomes 03:00 CEST, so 02:30 does not exist that day; it runs at 03:00 CEST.
    runs = cron.next_runs("30 2 * * *", "Europe/Berlin", after=utc(2026, 3, 27, 12), count=4)
    assert runs == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET (UTC+1)
        utc(2026, 3, 29, 1, 0),  # 03:00 CEST (UTC+2): the jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_daily_0230_berlin_on_fall_back_day_runs_once():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET, so 02:30 happens twice; it runs at the first one only.
    runs = cron.next_runs("30 2 * * *", "Europe/Berlin", after=utc(2026, 10, 23, 12), count=4)
    assert runs == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first 02:30 of the day
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]


def test_after_the_first_0230_of_the_fall_back_day_the_second_does_not_fire():
    assert cron.next_run("30 2 * * *", "Europe/Berlin", after=utc(2026, 10, 25, 0, 30)) == utc(
        2026, 10, 26, 1, 30
    )


def test_hourly_jobs_follow_the_real_clock_through_fall_back():
    # Minute 30 of every hour: the repeated local hour gives a run in each of its two occurrences.
    runs = cron.next_runs("30 * * * *", "Europe/Berlin", after=utc(2026, 10, 24, 23, 0), count=3)
    assert runs == [utc(2026, 10, 24, 23, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)]


def test_same_expression_in_us_zone_changes_utc_time_across_its_dst_change():
    # America/New_York leaves DST on 2026-11-01: 09:00 is 13:00 UTC before and 14:00 UTC after.
    runs = cron.next_runs("0 9 * * *", "America/New_York", after=utc(2026, 10, 31, 0), count=2)
    assert runs == [utc(2026, 10, 31, 13), utc(2026, 11, 1, 14)]


def test_latest_due_returns_the_most_recent_and_counts_the_passed_over():
    latest, passed = cron.latest_due(
        "*/10 * * * *", "UTC", since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 11, 5)
    )
    assert latest == utc(2026, 1, 1, 11, 0)
    assert passed == 6  # 10:00 .. 10:50


def test_latest_due_includes_since_and_now_bounds():
    assert cron.latest_due("0 * * * *", "UTC", since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 10)) == (
        utc(2026, 1, 1, 10),
        0,
    )
    assert cron.latest_due("0 * * * *", "UTC", since=utc(2026, 1, 1, 10), now=utc(2026, 1, 1, 9, 59)) == (
        None,
        0,
    )


def test_latest_due_after_a_month_down_finds_the_last_minute_without_replaying():
    latest, passed = cron.latest_due("* * * * *", "UTC", since=utc(2026, 1, 1), now=utc(2026, 2, 1, 0, 0, 30))
    assert latest == utc(2026, 2, 1, 0, 0)
    assert passed == 1000  # counted up to the cap, never replayed


def test_latest_due_for_a_sparse_schedule_looks_further_back_than_a_day():
    latest, _ = cron.latest_due("0 0 1 * *", "UTC", since=utc(2026, 1, 1), now=utc(2026, 3, 15))
    assert latest == utc(2026, 3, 1)


def test_explain_describes_the_expression():
    assert cron.explain("30 2 * * *") == "At 02:30 every day"
