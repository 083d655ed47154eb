// Placeholder: replaced by the adminui work.
