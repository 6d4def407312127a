"""The aigw gateway's server side: one package per service, and `runtime`, what they share."""
