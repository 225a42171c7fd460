"""The application layer: the `opendelta` command, the `train` app and its data handling (not imported by
`import opendelta`)."""
