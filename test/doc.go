// Package test holds imagefs's end-to-end tests (see main_test.go).
package test
