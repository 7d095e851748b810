"""Bounded Redis primitives and the Lua scripts behind them."""
