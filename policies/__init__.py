"""policies: may it? Zones, conduits, topic rules, limits; pure decisions and broker config."""
