"""One run: the experiment's pipeline, a backdoor defence on a finished folder, the transfer check."""
