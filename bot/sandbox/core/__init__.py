"""The sandbox's small core: the world's state, how methods are routed, and error shapes.

Everything under ``bot.sandbox.api`` (one module per area of the Bot API documentation)
builds on these modules; the core imports nothing of the areas, the server or the users.
"""
