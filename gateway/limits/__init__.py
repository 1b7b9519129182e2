"""Rate limits and quotas per subject and per group (token buckets in the shared state)."""
