//go:build race

package broadcaster

// raceEnabled: memory figures mean nothing under the race detector.
const raceEnabled = true
