//go:build !race

package broadcaster

const raceEnabled = false
