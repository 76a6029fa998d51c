package main

// Syscall numbers missing from the syscall package.
const sysRenameat2 = 316
