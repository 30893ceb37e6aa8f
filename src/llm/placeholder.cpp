// replaced by the llm module
