package main

import (
	"bytes"
	"fmt"
	"log"
	"strings"
	"testing"
	"time"
)

func TestLogGuardEscapes(t *testing.T) {
	var buf bytes.Buffer
	l := log.New(newLogGuard(&buf, true), "imagefs: ", 0)
	l.Printf("create %s: refused", "/rootfs/tmp/x\nimagefs: forged\r\x1b[2J\ttab")
	if want := "imagefs: create /rootfs/tmp/x\\nimagefs: forged\\r\\x1b[2J\\ttab: refused\n"; buf.String() != want {
		t.Errorf("logged %q, want %q", buf.String(), want)
	}
	// C1 controls, as UTF-8 and as the lone bytes an 8-bit terminal reads;
	// other text as it is.
	buf.Reset()
	l.Printf("create %s: refused", "/rootfs/tmp/\u009b2J\x9b2J caf\xe9 café ✓")
	if want := "imagefs: create /rootfs/tmp/\\u009b2J\\x9b2J caf\\xe9 café ✓: refused\n"; buf.String() != want {
		t.Errorf("logged %q, want %q", buf.String(), want)
	}
}

func TestLogGuardRate(t *testing.T) {
	var buf bytes.Buffer
	g := newLogGuard(&buf, true)
	clock := g.last
	g.now = func() time.Time { return clock }
	l := log.New(g, "", 0)
	for i := range 1000 {
		l.Printf("line %d", i)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != logBurst || lines[logBurst-1] != fmt.Sprintf("line %d", logBurst-1) {
		t.Fatalf("a burst of 1000 lines wrote %d, the last %q; want the first %d", len(lines), lines[len(lines)-1], logBurst)
	}
	buf.Reset()
	clock = clock.Add(time.Second)
	for i := range 1000 {
		l.Printf("later %d", i)
	}
	lines = strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != logLinesPerSecond {
		t.Errorf("one second later %d lines were written, want %d", len(lines), logLinesPerSecond)
	}
	if want := fmt.Sprintf("later 0 (%d lines before this one not logged: more than %d a second)", 900, logLinesPerSecond); lines[0] != want {
		t.Errorf("first line after the drops: %q, want %q", lines[0], want)
	}

	buf.Reset()
	debug := log.New(newLogGuard(&buf, false), "", 0)
	for i := range 1000 {
		debug.Printf("line %d", i)
	}
	if n := strings.Count(buf.String(), "\n"); n != 1000 {
		t.Errorf("with --debug %d of 1000 lines were written", n)
	}
}
