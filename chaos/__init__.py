"""Chaos for mla_node: a harness that kills nodes and a checker that audits what survived
(``python -m chaos``), and a fault-injecting TCP proxy placed between nodes (:mod:`chaos.proxy`).

Everything here is bounded in time and count and runs on loopback only.
"""
