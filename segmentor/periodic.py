"""Periodic tasks, declared in code and installed by ``manage.py setup_periodic_tasks``.

Later apps add their ticks (journeys, segment refresh, retention) here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str
    task: str
    # crontab fields: minute hour day_of_month month_of_year day_of_week
    crontab: str


PERIODIC_TASKS: tuple[PeriodicTaskSpec, ...] = (
    PeriodicTaskSpec(name="Expire stale invitations", task="tenants.tasks.expire_invitations", crontab="17 3 * * *"),
    PeriodicTaskSpec(name="Apply event retention", task="contacts.tasks.apply_retention_all", crontab="41 2 * * *"),
    PeriodicTaskSpec(
        name="Apply stale event backlog", task="contacts.tasks.apply_event_backlog_all", crontab="* * * * *"
    ),
    PeriodicTaskSpec(
        name="Run listeners again that could not hand over",
        task="contacts.tasks.retry_announcements_all",
        crontab="* * * * *",
    ),
    PeriodicTaskSpec(name="Advance due journey enrollments", task="journeys.tasks.tick_all", crontab="* * * * *"),
    PeriodicTaskSpec(name="Enter journey anniversaries", task="journeys.tasks.anniversaries_all", crontab="5 * * * *"),
    PeriodicTaskSpec(
        name="Resume stalled campaign runs", task="campaigns.scheduling.resume_stalled_runs_all", crontab="*/5 * * * *"
    ),
    PeriodicTaskSpec(
        name="Recompute send-time profiles", task="analytics.tasks.send_time_recompute_all", crontab="23 4 * * *"
    ),
    PeriodicTaskSpec(
        name="Recompute preferred-channel profiles",
        task="analytics.tasks.channel_profiles_recompute_all",
        crontab="41 4 * * *",
    ),
    PeriodicTaskSpec(
        name="Decide due A/B tests", task="analytics.experiments.decide_due_experiments", crontab="*/5 * * * *"
    ),
    PeriodicTaskSpec(name="Count message figures", task="analytics.tasks.stats_refresh_all", crontab="* * * * *"),
    PeriodicTaskSpec(
        name="Write slot impressions", task="personalization.tasks.flush_impressions_all", crontab="* * * * *"
    ),
    PeriodicTaskSpec(
        name="Keep customer value figures warm", task="analytics.tasks.value_refresh_viewed", crontab="*/5 * * * *"
    ),
    PeriodicTaskSpec(
        name="Forget stale website visitors",
        task="personalization.tasks.forget_stale_visitors_all",
        crontab="53 3 * * *",
    ),
    PeriodicTaskSpec(
        name="Close abandoned audience downloads",
        task="audiences.tasks.close_abandoned_downloads_all",
        crontab="*/15 * * * *",
    ),
    # Segment counts read the event window summaries only once they are counted for today.
    PeriodicTaskSpec(
        name="Move event window summaries on", task="segments.tasks.refresh_event_summaries_all", crontab="*/5 * * * *"
    ),
)
