"""Dynamic pricing: ride events -> supply and demand per area -> a price multiplier."""
