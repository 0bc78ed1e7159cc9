"""What needs TensorFlow: generate, roundtrip and explain build, train, save and restore real models; initializers
names what they start from; gate is the one place TensorFlow and Keras are imported. The reading side never imports
this package."""
