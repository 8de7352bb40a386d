"""The Markdown tables and charts of pfdx's reports (the run report, `pfdx compare`):
numbers in, text or PNG out, with no TensorFlow import."""
