"""Small plugin modules that the plugin manager tests load through entry points."""
