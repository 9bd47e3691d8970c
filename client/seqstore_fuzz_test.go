package client

import (
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzTokenIdentity: whatever token an app passes, the default seq file's
// name derived from it is one plain path element (nothing to climb out of
// StateDir with), short enough for a file system, and — unless hashed —
// spells back the user and device it was made from, so that two devices
// never share a file.
func FuzzTokenIdentity(f *testing.F) {
	claims := func(s string) string {
		return "eyJhbGciOiJFZERTQSJ9." + base64.RawURLEncoding.EncodeToString([]byte(s)) + ".c2ln"
	}
	f.Add(claims(`{"sub":"alice","dev":"phone"}`))
	f.Add(claims(`{"sub":"../../etc","dev":"passwd"}`))
	f.Add(claims(`{"sub":"a/b\\c","dev":"\u0000."}`))
	f.Add(claims(`{"sub":"a@b","dev":"c@d"}`))
	f.Add(claims(`{"sub":"` + strings.Repeat("é", 200) + `","dev":"d"}`))
	f.Add("not.a.jwt")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		user, device, ok := tokenIdentity(token)
		if !ok {
			return
		}
		if user == "" || device == "" {
			t.Fatalf("ok with an empty user %q or device %q", user, device)
		}
		name := stateFileName(user, device)
		if filepath.Base(name) != name || strings.ContainsAny(name, "/\\\x00") || strings.HasPrefix(name, ".") || len(name) > 255 {
			t.Fatalf("unsafe file name %q for %q / %q", name, user, device)
		}
		if strings.HasPrefix(name, "h-") {
			return // hashed: too long to spell back
		}
		u, d, found := strings.Cut(strings.TrimSuffix(name, ".seq"), "@")
		if !found || unescapeName(t, u) != user || unescapeName(t, d) != device {
			t.Fatalf("name %q does not spell back %q / %q", name, user, device)
		}
	})
}

// unescapeName reverses escapeName.
func unescapeName(t *testing.T, s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			t.Fatalf("truncated escape in %q", s)
		}
		var c byte
		for _, h := range s[i+1 : i+3] {
			c <<= 4
			switch {
			case '0' <= h && h <= '9':
				c |= byte(h - '0')
			case 'A' <= h && h <= 'F':
				c |= byte(h - 'A' + 10)
			default:
				t.Fatalf("bad escape in %q", s)
			}
		}
		b.WriteByte(c)
		i += 2
	}
	return b.String()
}
