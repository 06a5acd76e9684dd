"""The plant in a box: `idmz demo` runs the whole chain on loopback and tells its story."""
