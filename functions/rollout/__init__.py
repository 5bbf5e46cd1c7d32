"""The rollout: each assignment generation becomes a Knative revision pinned to
it, and traffic moves between revisions by strategy (immediate, canary,
manual), with promote and rollback.

``service`` (the Service document) and ``plan`` (the policy) are pure;
``apply`` talks to the Kubernetes API; ``handler`` turns one AssignmentChanged
into applied plans, for the Kafka consumer (``consumer``, ``rollway rollout
run``) and the Knative function (``functions/rollout_function``).
"""
