/* placeholder: replaced by the codec */
