"""Stacks (Heat's half of the mission, issue 19): declarative templates of resources with parameters,
outputs, conditions and dependencies; plan (a diff) before apply; convergence and drift.

The template language is pure code with no I/O: ``template`` (parse and validate), ``functions``
(intrinsic functions), ``parameters`` (binding, constraints, secrets) and ``graph`` (dependency order).
The user reference is ``docs/stacks-templates.md``.
"""
