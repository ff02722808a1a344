//! Shared helpers of the end-to-end tests live under `e2e/`.
