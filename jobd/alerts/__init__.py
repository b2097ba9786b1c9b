"""Alerts that reach a person (docs/alerts.md).

`rules` decides what fires and what resolves (pure: no I/O, no clock of its
own); `delivery` runs the command and posts the webhook, on threads of its own,
so a receiver that hangs never holds up the loop; `service` evaluates the rules
on the loop every few seconds, keeps the firing state in the data dir and
publishes the events.
"""
