//! Operations as plain functions: add, reconcile, inspect, verify, seal.
