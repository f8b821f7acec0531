"""Noise schedules, forward processes and reverse-time samplers (plain torch)."""
