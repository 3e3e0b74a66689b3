"""Notifications (issue 18): event subscriptions and durable deliveries to chat rooms, signed webhooks and
e-mail. See ``docs/notifications.md``."""
