"""Census: live tensors attributed to the names, hidden holders and graphs that keep them alive."""
