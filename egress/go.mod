module nullspace/egress

go 1.19
