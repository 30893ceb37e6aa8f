// replaced by the vision module
