"""provisioning: enrollment service, registry, tokens, EST, renewal, expiry alerts, client."""
