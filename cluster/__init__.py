"""The servers: master/, volume/, gateway/, and what they share (common/)."""
