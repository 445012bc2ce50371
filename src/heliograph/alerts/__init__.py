"""Alerts and webhooks (issue 12): rules checked (rules.py), evaluated from the rollups by one
gateway (evaluator.py), and every notification sent from the outbox (delivery.py, channels.py).

    rules.py      what a rule is; every problem names its field
    evaluator.py  states ok → firing → resolved with a cooldown; anomaly baselines; budgets at 80/100 %;
                  the lease that elects one evaluator across gateways
    channels.py   webhook (signed), Slack, email bodies, and sending them
    delivery.py   the worker that drains the outbox with retries and backoff
"""
