"""One module per tab: each arranges the generated fields of its tab and adds its own widgets."""
