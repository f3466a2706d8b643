"""stack-deployer: builds and runs a stack's containers on the container engine."""
