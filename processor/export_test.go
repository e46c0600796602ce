package processor

// ExactDecimal exposes the decoder's float fast path to the tests.
var ExactDecimal = exactDecimal
