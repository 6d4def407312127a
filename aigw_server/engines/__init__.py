"""The engines both backends run: supervised model-server processes, their crash log and their OpenAI-compatible HTTP client."""
