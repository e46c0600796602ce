package processor

import "encoding/json"

// scanner walks one JSON document without allocating. It validates the
// grammar of everything it passes over, so a document it accepts is one that
// encoding/json would accept too (apart from duplicate keys: last wins).
type scanner struct {
	b []byte
	i int
	// tooDeep is set when a skipped value nested past maxDepth: the
	// rejection says so rather than "not valid JSON".
	tooDeep bool
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.peek() == c {
		s.i++
		return true
	}
	return false
}

// str reads a string whose opening quote is next. raw is the content between
// the quotes, still escaped when escaped is true; it aliases the input.
func (s *scanner) str() (raw []byte, escaped, ok bool) {
	if !s.eat('"') {
		return nil, false, false
	}
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			raw = s.b[start:s.i]
			s.i++
			return raw, escaped, true
		case c == '\\':
			escaped = true
			if s.i+1 >= len(s.b) {
				return nil, false, false
			}
			switch s.b[s.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i += 2
			case 'u':
				if s.i+6 > len(s.b) {
					return nil, false, false
				}
				for _, h := range s.b[s.i+2 : s.i+6] {
					if !isHex(h) {
						return nil, false, false
					}
				}
				s.i += 6
			default:
				return nil, false, false
			}
		case c < 0x20:
			return nil, false, false
		default:
			s.i++
		}
	}
	return nil, false, false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// number reads a JSON number; integer reports that it had no fraction or
// exponent.
func (s *scanner) number() (raw []byte, integer, ok bool) {
	s.ws()
	start := s.i
	integer = true
	if s.i < len(s.b) && s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.i < len(s.b) && s.b[s.i] >= '1' && s.b[s.i] <= '9':
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
	default:
		return nil, false, false
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		integer = false
		s.i++
		d := s.i
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
		if s.i == d {
			return nil, false, false
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		integer = false
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		d := s.i
		for s.i < len(s.b) && isDigit(s.b[s.i]) {
			s.i++
		}
		if s.i == d {
			return nil, false, false
		}
	}
	return s.b[start:s.i], integer, true
}

func (s *scanner) lit(word string) bool {
	s.ws()
	if len(s.b)-s.i >= len(word) && string(s.b[s.i:s.i+len(word)]) == word {
		s.i += len(word)
		return true
	}
	return false
}

// maxDepth bounds nesting in skipped values so a hostile message cannot
// exhaust the stack.
const maxDepth = 64

// skip passes over any value.
func (s *scanner) skip(depth int) bool {
	if depth > maxDepth {
		s.tooDeep = true
		return false
	}
	switch s.peek() {
	case '"':
		_, _, ok := s.str()
		return ok
	case '{':
		s.i++
		if s.eat('}') {
			return true
		}
		for {
			if _, _, ok := s.str(); !ok || !s.eat(':') || !s.skip(depth+1) {
				return false
			}
			if s.eat('}') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case '[':
		s.i++
		if s.eat(']') {
			return true
		}
		for {
			if !s.skip(depth + 1) {
				return false
			}
			if s.eat(']') {
				return true
			}
			if !s.eat(',') {
				return false
			}
		}
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		_, _, ok := s.number()
		return ok
	}
}

// object reads an object whose '{' is next, calling field with each key
// (decoded when escaped) and the first byte of its value, which field must
// read; false from field stops it. It reports whether the object was
// well-formed.
func (s *scanner) object(field func(key []byte, c byte) bool) bool {
	if !s.eat('{') {
		return false
	}
	if s.eat('}') {
		return true
	}
	for {
		key, kesc, ok := s.str()
		if !ok || !s.eat(':') {
			return false
		}
		if kesc {
			// An escaped key is never one of ours in practice; compare it decoded.
			var k string
			if json.Unmarshal(quote(key), &k) != nil {
				return false
			}
			key = []byte(k)
		}
		if !field(key, s.peek()) {
			return false
		}
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
	}
}
