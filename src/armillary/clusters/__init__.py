"""Clusters (Senlin's half of the mission): profiles, clusters of identical systems, capacity maths,
policies and receivers.

Members are ordinary systems labelled ``cluster=<name>``; ``cluster_members`` links each to its cluster
with its index and the profile revision it was made from. See ``docs/clusters.md``.
"""
