module nullspace/agent

go 1.19
