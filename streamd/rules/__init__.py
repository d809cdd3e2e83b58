"""Plain-language rules: compiler to explainable plans and their temporal evaluation."""
