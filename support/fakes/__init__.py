"""Wire-faithful fakes of upstream LLM APIs (OpenAI, Gemini) that the real SDKs talk to."""
