//! Connection roles, budget, timeouts.
