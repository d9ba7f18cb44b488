package main

import (
	"bytes"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// The server logs every refused change with the path the caller gave, and
// with --allow-other other users can make as many as they like: a name
// holding a newline must not forge a line of root's log, and a loop of
// refused mkdirs must not fill its disk.
const (
	logBurst          = 100 // lines written at once before the rate applies
	logLinesPerSecond = 10
)

// logGuard is a writer of the server's log (one Write per line, as
// log.Logger makes them). It escapes control characters, and, limiting,
// past a burst it writes at most logLinesPerSecond lines a second; the
// next line written says how many were not. The tree's lines go through a
// limiting one, except with --debug; the server's own through one that
// only escapes.
type logGuard struct {
	mu      sync.Mutex
	w       io.Writer
	limit   bool
	now     func() time.Time
	tokens  float64
	last    time.Time
	dropped int
}

func newLogGuard(w io.Writer, limit bool) *logGuard {
	return &logGuard{w: w, limit: limit, now: time.Now, tokens: logBurst, last: time.Now()}
}

func (g *logGuard) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.limit {
		now := g.now()
		g.tokens = min(logBurst, g.tokens+now.Sub(g.last).Seconds()*logLinesPerSecond)
		g.last = now
		if g.tokens < 1 {
			g.dropped++
			return len(p), nil
		}
		g.tokens--
	}
	line := escapeControl(bytes.TrimSuffix(p, []byte("\n")))
	if g.dropped > 0 {
		line = fmt.Appendf(line, " (%d lines before this one not logged: more than %d a second)", g.dropped, logLinesPerSecond)
		g.dropped = 0
	}
	if _, err := g.w.Write(append(line, '\n')); err != nil {
		return 0, err
	}
	return len(p), nil
}

// escapeControl writes the control characters of b as Go escapes (\n,
// \x1b, \u009b), so that one log line stays one line and cannot drive a
// terminal. Bytes that are not UTF-8 are escaped too (\xe9): a terminal
// in an 8-bit mode takes 0x9b alone for the C1 control CSI.
func escapeControl(b []byte) []byte {
	if !needsEscape(b) {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\n':
			out = append(out, `\n`...)
		case r == '\r':
			out = append(out, `\r`...)
		case r == '\t':
			out = append(out, `\t`...)
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f:
			out = fmt.Appendf(out, `\x%02x`, b[0])
		case r <= 0x9f && r >= 0x80:
			out = fmt.Appendf(out, `\u%04x`, r)
		default:
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return out
}

func needsEscape(b []byte) bool {
	return !utf8.Valid(b) || bytes.ContainsFunc(b, func(r rune) bool { return r < 0x20 || r >= 0x7f && r <= 0x9f })
}

// takeDropped returns how many lines were left out since the last line
// written, and forgets them: the caller says so (at the end of a mount).
func (g *logGuard) takeDropped() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.dropped
	g.dropped = 0
	return n
}
